"""Beat's scheduler: `celery -A config beat` (CELERY_BEAT_SCHEDULER)."""

from django_celery_beat.schedulers import DatabaseScheduler

from config import services


class Scheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler, which writes the app's
    beat_schedule into its PeriodicTask rows at every start (an entry an
    operator disabled stays disabled). Before that, the rows of berth's
    entries that beat_schedule no longer has are removed: they would fire
    tasks that no longer exist."""

    def setup_schedule(self):
        services.periodic_tasks_register(names=list(self.app.conf.beat_schedule))
        super().setup_schedule()
