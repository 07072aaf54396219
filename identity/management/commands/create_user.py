from django.core.management.base import BaseCommand, CommandError

from identity.models import Role
from identity.services import user_password_set


class Command(BaseCommand):
    help = (
        "Create a user with a password and a role in a project (creating the project if "
        "missing), or set an existing user's password and role: what the identity API's "
        "password authentication (auth_url, user, password, project) checks."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--password", required=True)

    def handle(self, *args, username, project, role, password, **options):
        if not password:
            raise CommandError("--password must not be empty")
        membership = user_password_set(
            project_name=project, username=username, role=role, password=password
        )
        self.stdout.write(
            f"user {membership.user.username} is {membership.role} of project "
            f"{membership.project.name} ({membership.project.id.hex})"
        )
