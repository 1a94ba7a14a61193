"""Shared test helpers.

A test that needs a system component (GStreamer's RTSP server, Chromium, CUDA) calls `need(ok, reason)`:
on a developer's laptop it skips with the reason; in CI (`CI=true`) it fails, so a missing install step
can never turn into a silently green run. CUDA is the exception: CI machines have none, so CUDA tests
are marked `cuda` and always skip without it.
"""
import os
import time

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(ok: bool, reason: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI lacks a required system component: {reason}")
    pytest.skip(reason)


def wait_for(cond, what: str, deadline: float = 120.0, retry_on: tuple[type[BaseException], ...] = ()):
    """Poll `cond` until it returns something true (returned) or `deadline` seconds pass (AssertionError);
    `retry_on` names exceptions that mean "not yet" (a service restoring, an actor moving)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if value := cond():
                return value
        except retry_on:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")
