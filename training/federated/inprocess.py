"""Flower's message path without Ray: the same ServerApp rounds and ClientApp, in this process.

``InProcessGrid`` is a ``flwr.serverapp.Grid`` that delivers each message to the ClientApp of its
destination node, one after the other, in this process; each node keeps its own ``Context`` (its
``node_config`` and ``state``, where a centre's privacy accountant lives) across rounds, as a SuperNode
or the simulation engine does. A ClientApp that raises becomes an error reply, exactly as in Flower.

It exists because Flower's simulation engine starts Ray and one actor per CPU, each importing torch and
loading the model: ~25 s before the first round on a 2-core machine, which the tests and small
benchmarks would pay on every run. The messages, strategies, aggregation and accounting are the same;
what it does not have is parallelism and a per-round timeout (a centre that hangs here hangs the run).
"""
from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

SERVER_NODE_ID = 1  # Flower's SUPERLINK_NODE_ID
_run_ids = itertools.count(1)


class InProcessGrid(Grid):
    def __init__(self, client_app, centres: int):
        self.client_app = client_app
        self.run_id = next(_run_ids)
        self.contexts = {1000 + i: Context(run_id=self.run_id, node_id=1000 + i,
                                           node_config={"partition-id": i, "num-partitions": centres},
                                           state=RecordDict(), run_config={})
                         for i in range(centres)}
        self._run = None
        self._replies: dict[str, Message] = {}
        TaskIdentity.run_id = self.run_id  # Flower stamps new messages with the running task's identity
        TaskIdentity.task_id = self.run_id
        TaskIdentity.node_id = SERVER_NODE_ID

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content=content, message_type=message_type, dst_node_id=dst_node_id, group_id=group_id,
                       ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            # Set the way Flower's own grids set them (the properties have no setters).
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            message.metadata.__dict__["_src_node_id"] = SERVER_NODE_ID
            context = self.contexts[message.metadata.dst_node_id]
            try:
                reply = self.client_app(message, context)
            except Exception as exc:  # as Flower does: the failure travels back as an error reply
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(message_id) for message_id in message_ids if message_id in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
