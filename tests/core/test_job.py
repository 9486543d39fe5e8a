"""The job runtime on its own: no gevent, no sockets."""

from __future__ import annotations

import pytest
from greenlet import GreenletExit

import pausetls
from pausetls.core._binding import drain_error_queue, ffi, lib
from pausetls.core._job import Job, JobState, Paused, current_job, in_job, pause


def test_started_job_pauses_to_its_starter_and_resumes_with_a_value() -> None:
    seen: list[object] = []

    def body(x: int) -> int:
        seen.append(in_job())
        got = pause("waitable-1", 0.5)
        seen.append(got)
        return x + int(got)

    job = Job(body, 40)
    request = job.start()
    assert isinstance(request, Paused)
    assert (request.waitable, request.timeout) == ("waitable-1", 0.5)
    assert job.state is JobState.PAUSED
    assert not in_job()  # the starter is not inside the job
    assert job.resume(2) is None
    assert job.done and job.result == 42
    assert seen == [True, 2]
    assert pausetls.live_objects()["jobs"] == 0


def test_throw_cancels_a_paused_job() -> None:
    job = Job(lambda: pause("never"))
    assert job.start() is not None
    with pytest.raises(RuntimeError, match="cancelled"):
        job.throw(RuntimeError("cancelled"))
    assert job.done
    killed = Job(lambda: pause("never"))
    killed.start()
    assert killed.throw(GreenletExit()) is None  # greenlet ends quietly on GreenletExit
    assert killed.done and pausetls.live_objects()["jobs"] == 0


def test_inline_job_pauses_through_the_waiter() -> None:
    waited: list[tuple[object, float | None]] = []

    def waiter(waitable: object, timeout: float | None) -> str:
        waited.append((waitable, timeout))
        return "ready"

    job = Job(lambda: (current_job(), pause("w", 1.0)))
    result = job.run_inline(waiter)
    assert result == (job, "ready")
    assert waited == [("w", 1.0)]
    assert current_job() is None


def test_jobs_nest_in_one_greenlet() -> None:
    inner = Job(current_job)
    outer = Job(lambda: (current_job(), inner.run_inline(None), current_job()))
    first, inner_seen, last = outer.run_inline(None)
    assert first is outer and inner_seen is inner and last is outer


def test_pause_outside_a_job_is_refused() -> None:
    with pytest.raises(pausetls.PauseError, match="outside a job"):
        pause("w")


def test_a_non_pausable_callback_refuses_to_pause() -> None:
    job = Job(lambda: job.run_callback("session_remove", False, pause, "w"))
    ran, _ = job.run_inline(lambda w, t: None)
    assert not ran
    assert isinstance(job.exception, pausetls.PauseError)
    assert "session_remove callback must not pause" in str(job.exception)


class _Interrupt(BaseException):
    pass


def test_run_callback_keeps_the_first_base_exception_and_skips_later_callbacks() -> None:
    calls: list[str] = []

    def raising() -> None:
        calls.append("first")
        raise _Interrupt("stop")

    def body() -> tuple[tuple[bool, object], tuple[bool, object]]:
        return job.run_callback("verify", True, raising), job.run_callback("verify", True, calls.append, "second")

    job = Job(body)
    first, second = job.run_inline(None)
    assert first == (False, None) and second == (False, None)
    assert calls == ["first"]
    assert isinstance(job.exception, _Interrupt) and job.failed_callback == "verify"


def _push_openssl_error() -> None:
    ctx = lib.SSL_CTX_new(lib.TLS_method())
    try:
        assert lib.SSL_CTX_use_certificate_chain_file(ctx, b"/nonexistent/pausetls") == 0
    finally:
        lib.SSL_CTX_free(ctx)


def test_callbacks_preserve_the_error_queue_of_the_c_call_around_them() -> None:
    def callback() -> None:
        assert lib.ERR_peek_error() == 0  # the callback starts with an empty queue
        lib.ERR_clear_error()
        _push_openssl_error()  # and what it leaves behind is dropped

    def body() -> list[int]:
        _push_openssl_error()
        before = [e.code for e in drain_error_queue()]
        _push_openssl_error()
        job.run_callback("verify", True, callback)
        after = [e.code for e in drain_error_queue()]
        assert after == before
        return after

    job = Job(body)
    assert job.run_inline(None)
    assert lib.ERR_peek_error() == 0
    assert ffi is not None
