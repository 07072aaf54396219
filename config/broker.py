"""kombu's filesystem transport, for the embedded default's broker."""

from kombu.transport import filesystem


class Transport(filesystem.Transport):
    """The filesystem transport, draining for at most one polling interval.

    Celery's worker runs a blocking loop for a transport without async I/O,
    such as this one: drain the broker for up to 2 s, then do what was queued
    meanwhile, which includes acknowledging the tasks that finished (acks
    are late). While the prefetch window (concurrency x 1) is full of
    unacknowledged messages the channel takes nothing, so the drain slept
    out its 2 s although the tasks holding the window had long finished:
    every message, each step of a build and each sweep, waited up to 2 s,
    and the worker took about one message a second. Returning after one
    polling interval lets the loop acknowledge at once; the folder is polled
    as often as before."""

    def drain_events(self, connection, timeout=None):
        if timeout is not None:
            timeout = min(timeout, self.polling_interval)
        return super().drain_events(connection, timeout=timeout)
