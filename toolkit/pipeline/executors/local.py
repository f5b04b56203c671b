"""The local executor: every combination in this process, one after another (what optkit always did).

Serial, so a measurement never shares the cores with another task of the sweep; its node is this host."""
from __future__ import annotations

import socket

from toolkit.pipeline.executors import register


@register("local")
class LocalExecutor:
    name = "local"
    startup_s = 0.0

    def __init__(self, address: str | None = None):
        from toolkit.core.errors import ConfigError

        if address is not None:
            raise ConfigError(f"--address {address}: only the ray executor connects to a cluster; add --executor ray")

    def nodes(self) -> list[dict]:
        return [{"node": socket.gethostname(), "cpus": None}]

    def run(self, combinations, on_phase, shared=()) -> None:
        from toolkit.pipeline.executors.tasks import build_combination, measure_combination

        node = socket.gethostname()
        for combo in combinations:
            built = build_combination(combo, node)
            on_phase(combo, "build", built)
            on_phase(combo, "measure", measure_combination(combo, built, node))
