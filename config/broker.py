"""kombu's filesystem transport, for the embedded default's broker."""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """The filesystem channel, publishing each message and creating each
    exchange's table whole.

    kombu's reader takes a message by moving its file out of the queue
    folder and reading it, without the lock its writer holds while writing:
    a message still being written was read empty, and the JSON error ended
    the worker's consumer (its builds then waited for the reaper). Each
    message is written under a name no queue reads (``.part``) and renamed
    into place, which is atomic, so a reader sees it whole or not at all."""

    def _put(self, queue, payload, **kwargs):
        # kombu's own naming: readers take files in order of this prefix.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(f"{path}.part", "wb") as part:
                part.write(str_to_bytes(dumps(payload)))
            os.replace(f"{path}.part", path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        """kombu creates an exchange's table by opening it for writing
        (empty) and only then locking and writing it: another process that
        binds a queue to the same exchange meanwhile read it empty, and the
        JSON error ended that worker at start (the demo's agents declare
        their queues together). A new table is written aside and linked
        into place, which fails if another process made it first (or on a
        filesystem without links); kombu's own code then adds to it under
        its lock."""
        table = self._exchange_file(exchange)
        if not table.exists():
            self.control_folder.mkdir(exist_ok=True)
            part = table.with_name(f"{table.name}.{uuid.uuid4()}.part")
            binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
            part.write_bytes(str_to_bytes(dumps([binding])))
            try:
                os.link(part, table)
                return
            except OSError:
                pass
            finally:
                part.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    """The filesystem transport, with whole messages (``Channel``) and
    draining for at most one polling interval.

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

    Channel = Channel

    def drain_events(self, connection, timeout=None):
        if timeout is not None:
            timeout = min(timeout, self.polling_interval)
        return super().drain_events(connection, timeout=timeout)
