"""Keyed job messages for tests that talk to a worker as a raw peer (a worker requires a per-job key by default).

A `job_request` carries `job_key_sha256` (the sha256 of the key's UTF-8 bytes, 64 lowercase hex digits); every
later message about that job (`job_assignment`, `job_cancel`, `job_stop`, `job_sync`, `rtc_offer`) carries the
key itself as `job_key` (docs/protocol.md, "The job key").
"""

from __future__ import annotations

from typing import Any

from fsm_worker.protocol.client.job import job_key_sha256

#: The key raw-peer tests use for their jobs (43 URL-safe characters, like `JobClient`'s).
TEST_JOB_KEY = "test-job-key-0123456789-abcdefghijklmnopqrs"
TEST_JOB_KEY_SHA256 = job_key_sha256(TEST_JOB_KEY)


def keyed_request(job_id: str, job_type: str, key: str = TEST_JOB_KEY, **extra: Any) -> dict[str, Any]:
    """A wire `job_request` for `job_id` that carries the hash of `key`."""
    return {
        "app_message_type": "job_request",
        "job_id": job_id,
        "job_type": job_type,
        "job_key_sha256": job_key_sha256(key),
        **extra,
    }


def keyed(app_message_type: str, job_id: str, key: str = TEST_JOB_KEY, **fields: Any) -> dict[str, Any]:
    """A wire message about `job_id` that presents `key` (an assignment, cancel, stop, sync or offer)."""
    return {"app_message_type": app_message_type, "job_id": job_id, "job_key": key, **fields}
