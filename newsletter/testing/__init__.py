"""Stand-ins for the outside world, shipped in the package so tests and benchmarks check real traffic.

`fake_esp.FakeEsp` speaks SendGrid's Mail Send API on loopback, validates every body against the rules of
the published schema, records what it accepted and can be told to fail in the ways a real ESP does.
"""

from __future__ import annotations
