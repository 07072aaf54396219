"""What compute tells the apps above it (reservations heals leases and
notifies), without importing them."""

from django.dispatch import Signal

# A host's heartbeats stopped or came back. kwargs: host (its name), up
# (whether it is up now), failed_over (the ids of the builds sent to other
# hosts because it went down).
host_liveness = Signal()
