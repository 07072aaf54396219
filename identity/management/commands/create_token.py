from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from identity.models import Role
from identity.services import token_create


class Command(BaseCommand):
    help = (
        "Create an API token for a user's role in a project, creating the project, "
        "user and role assignment if missing. Prints the token as the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--user", required=True, help="user name")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument(
            "--expires-in", type=int, default=None, metavar="SECONDS", help="default: never"
        )

    def handle(self, *args, project, user, role, expires_in, **options):
        if expires_in is not None and expires_in <= 0:
            raise CommandError("--expires-in must be a positive number of seconds")
        expires_at = timezone.now() + timedelta(seconds=expires_in) if expires_in else None
        token, raw = token_create(
            project_name=project, username=user, role=role, expires_at=expires_at
        )
        membership = token.membership
        self.stdout.write(
            f"token for {membership.user.username} as {membership.role} in project "
            f"{membership.project.name} ({membership.project.id.hex})"
        )
        self.stdout.write(raw)
