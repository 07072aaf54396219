#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] == ["agent"]:
        # A host's agent holds no database credentials (config.settings).
        os.environ["BERTH_ROLE"] = "agent"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
