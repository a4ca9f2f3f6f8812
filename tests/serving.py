"""`archomata serve` as a real process for the tests that signal or kill it: started
with the harness's environment (and overrides), its log in a file, ready when it says so."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from archomata.ops.devservers import free_port


@dataclass
class Served:
    process: Any  # asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def ended(self) -> None:
        self.kill()
        await self.process.wait()


async def serve(environ: dict[str, str], directory: Path, *arguments: str,
                **overrides: str) -> Served:
    """`archomata serve *arguments`, with ARCHOMATA_{NAME} set from `overrides`."""
    port = free_port()
    log = directory / f"serve-{port}.log"
    with log.open("wb") as sink:  # a file, not a pipe: a full pipe would stall the logs
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "archomata", "serve", *arguments,
            env={**environ, "ARCHOMATA_PORT": str(port),
                 **{f"ARCHOMATA_{k.upper()}": v for k, v in overrides.items()}},
            stdout=asyncio.subprocess.DEVNULL, stderr=sink)
    served = Served(process, port, log)
    try:
        await _until_ready(served)
    except BaseException:
        await served.ended()
        raise
    return served


async def _until_ready(served: Served) -> None:
    async with aiohttp.ClientSession(served.url) as probe:
        for _ in range(300):
            if served.process.returncode is not None:
                raise AssertionError(f"archomata serve exited: {served.log.read_text()[-2000:]}")
            try:
                async with probe.get("/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectorError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("archomata serve never became ready")
