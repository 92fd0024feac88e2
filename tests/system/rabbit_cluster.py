"""A three-node RabbitMQ cluster of its own, on this machine, for one test.

Each node is a `rabbitmq-server` of the Debian package with its own node name, AMQP and
distribution ports, data and log directories and config file; the three share an Erlang
cookie (in a HOME of their own, so the machine's broker and its cookie are untouched). No
plugins (no management, no Prometheus: their ports would clash). `stop` stops every node and
kills what is left of each process group: nothing outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 90.0


def cluster_unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        return f"no {RABBITMQ_BIN}/rabbitmq-server (the Debian rabbitmq-server package)"
    if shutil.which("epmd") is None and not Path("/usr/lib/erlang/bin/epmd").exists():
        return "no epmd (Erlang)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Node:
    name: str  # janus-TAG-N@localhost
    port: int  # AMQP
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


@dataclass
class RabbitCluster:
    base: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = self.base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text(
            'ERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
        )
        for index in range(3):
            node_base = self.base / f"node{index}"
            (node_base / "log").mkdir(parents=True)
            node = Node(
                name=f"janus-{self.tag}-{index}@localhost",
                port=free_port(),
                dist_port=free_port(),
                base=node_base,
            )
            # loopback_users: guest may log in over 127.0.0.1 only, as on the machine's broker.
            (node_base / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.port}\nloopback_users.guest = true\n"
                "cluster_partition_handling = pause_minority\n"
            )
            self.nodes.append(node)

    @property
    def urls(self) -> str:
        """Every node's AMQP URL, comma-separated: what Janus and the SDK take for a cluster."""
        return ",".join(node.url for node in self.nodes)

    def env(self, node: Node) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq"),  # .conf appended
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(node.base / "pid"),
        }

    async def ctl(self, node: Node, *args: str, timeout: float = 60.0) -> str:
        process = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmqctl"),
            "-n",
            node.name,
            *args,
            env=self.env(node),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {node.name}: no answer in {timeout:g} s"
            ) from None
        text = out.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name} failed: {text.strip()}")
        return text

    def launch(self, node: Node) -> None:
        log = (node.base / "log" / "stdout.log").open("ab")
        node.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env(node),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole at the end
        )
        log.close()

    async def await_startup(self, node: Node) -> None:
        # await_startup waits for a node that is booting, but fails at once while the VM has not
        # yet registered with epmd ("not running at all"): on a busy machine that takes seconds.
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:
            try:
                await self.ctl(
                    node, "await_startup", "--timeout", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 10
                )
                return
            except RuntimeError as exc:
                alive = node.process is not None and node.process.poll() is None
                if "not running at all" not in str(exc) or not alive:
                    raise
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(1.0)

    async def start(self) -> None:
        """Start the three nodes and join the second and third to the first."""
        for node in self.nodes:
            self.launch(node)
        await asyncio.gather(*(self.await_startup(node) for node in self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            await self.ctl(node, "stop_app")
            await self.ctl(node, "join_cluster", first.name)
            with contextlib.suppress(RuntimeError):  # retried by await_app_running, which says why
                await self.ctl(node, "start_app")
        await asyncio.gather(*(self.await_app_running(node) for node in self.nodes))
        await self.ctl(first, "await_online_nodes", "3")

    async def stop_node(self, node: Node) -> None:
        """Stop one node as an operator would (its AMQP port closes; the others carry on)."""
        await self.ctl(node, "stop")
        self._reap(node)

    async def restart_node(self, node: Node) -> None:
        self.launch(node)
        await self.await_startup(node)
        await self.await_app_running(node)

    async def await_app_running(self, node: Node) -> None:
        """Until the node's 'rabbit' application runs. On a loaded machine a node can come back
        (await_startup answers) with the application stopped, as after a failed boot step or a
        stop_app of the join; start_app is then retried until START_TIMEOUT, and a node that never
        runs it fails here, with its status, rather than as a confusing error later."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            status = await self.app_status(node)
            if status is None:
                return
            if loop.time() > deadline:
                raise RuntimeError(f"{node.name}: the 'rabbit' application is not running: {status}")
            with contextlib.suppress(RuntimeError):  # refused while booting: asked again below
                await self.ctl(node, "start_app", timeout=START_TIMEOUT)
                await self.ctl(
                    node, "await_startup", "--timeout", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 10
                )
            await asyncio.sleep(1.0)

    async def app_status(self, node: Node) -> str | None:
        """None if the node's 'rabbit' application runs, else what rabbitmqctl said instead."""
        try:
            out = await self.ctl(node, "eval", "rabbit:is_running().")
        except RuntimeError as exc:
            return str(exc)
        return None if out.strip() == "true" else f"rabbit:is_running() = {out.strip()}"

    def _reap(self, node: Node) -> None:
        process, node.process = node.process, None
        if process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the VM, and whatever it started (erl_child_setup)
        process.wait()

    async def stop(self) -> None:
        """Stop every node still running; nothing is left."""
        for node in self.nodes:
            if node.process is None:
                continue
            with contextlib.suppress(RuntimeError):
                await self.ctl(node, "stop", timeout=30)
            self._reap(node)
