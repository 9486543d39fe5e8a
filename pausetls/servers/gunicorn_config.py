"""gunicorn's TLS settings as a pausetls `Context`, and the ``pausetls_context`` server hook.

gunicorn reads ``--certfile --keyfile --ca-certs --cert-reqs --ciphers`` for its own stdlib ``ssl``
wrapping; `context_from_config` builds the same policy as a pausetls `Context`.  ``cert_reqs`` is
the stdlib's number: 0 asks for no client certificate, 1 (``CERT_OPTIONAL``) verifies one if sent,
2 (``CERT_REQUIRED``) requires it.

The hook ``pausetls_context(worker, context)``, set in the gunicorn config file, runs in each worker
after the fork, before it serves: it installs callbacks (which may pause) and session stores.
gunicorn ignores names it does not know in a config file, and it reads the file before it imports
the worker class (which defines `PausetlsContext`): `install_hook_setting` adds the setting to that
already-parsed configuration and takes its value from the config module gunicorn loaded.
"""

from __future__ import annotations

import importlib
import ssl
import sys
from collections.abc import Callable
from typing import Any

from gunicorn import config as gunicorn_config

from ..core import constants
from ..core.context import Context

__all__ = ["PausetlsContext", "HOOK_NAME", "context_from_config", "install_hook_setting", "check_tls_settings"]

HOOK_NAME = "pausetls_context"
ContextHook = Callable[[Any, Context], None]

_VERIFY_MODES = {
    ssl.CERT_NONE: constants.VERIFY_NONE,
    ssl.CERT_OPTIONAL: constants.VERIFY_PEER,
    ssl.CERT_REQUIRED: constants.VERIFY_PEER | constants.VERIFY_FAIL_IF_NO_PEER_CERT,
}


def _no_hook(worker: Any, context: Context) -> None:
    """The default: the context as gunicorn's settings make it."""


class PausetlsContext(gunicorn_config.Setting):  # type: ignore[misc]
    name = HOOK_NAME
    section = "Server Hooks"
    validator = gunicorn_config.validate_callable(2)
    type = Callable
    default = staticmethod(_no_hook)
    desc = """\
        Called in each pausetls.gunicorn.GeventWorker, after the fork and before it serves, with the
        worker and its pausetls.Context (already holding --certfile/--keyfile/--ca-certs/--cert-reqs/
        --ciphers): install verify and other handshake callbacks (they may pause) and session stores.
        """


def check_tls_settings(cfg: Any) -> None:
    """Refuse, with one sentence, a configuration this worker cannot serve; build its context once."""
    if not cfg.certfile or not cfg.keyfile:
        raise RuntimeError(
            "pausetls.gunicorn.GeventWorker serves HTTPS only: give it --certfile and --keyfile "
            "(certfile and keyfile in the config file)"
        )
    if cfg.cert_reqs not in _VERIFY_MODES:
        raise RuntimeError(f"--cert-reqs is 0, 1 or 2 (none, optional, required), not {cfg.cert_reqs}")
    try:
        context_from_config(cfg)
    except Exception as exc:  # any unreadable file or bad setting: one sentence, not a traceback
        raise RuntimeError(f"pausetls.gunicorn.GeventWorker cannot use the TLS settings: {exc}") from exc


def context_from_config(cfg: Any) -> Context:
    """A server `Context` with gunicorn's TLS settings (the ``pausetls_context`` hook not yet run)."""
    context = Context(constants.TLS_SERVER_METHOD)
    context.use_certificate_chain_file(cfg.certfile)
    context.use_privatekey_file(cfg.keyfile)
    if cfg.ca_certs:
        context.load_verify_locations(cfg.ca_certs)
    if cfg.ciphers:
        context.set_cipher_list(cfg.ciphers)
    context.set_verify(_VERIFY_MODES[cfg.cert_reqs])
    return context


def install_hook_setting(cfg: Any) -> None:
    """Give *cfg* (parsed before `PausetlsContext` existed) the setting, valued from its config module."""
    if HOOK_NAME in cfg.settings:
        return  # parsed after the import (gunicorn reloading on SIGHUP): gunicorn set it
    setting = PausetlsContext()
    cfg.settings[HOOK_NAME] = setting
    hook = _config_module_values(cfg.config).get(HOOK_NAME)
    if hook is not None:
        cfg.set(HOOK_NAME, hook)


def _config_module_values(location: str | None) -> dict[str, Any]:
    """The names the config file (or ``python:module``) defined, as gunicorn loaded them."""
    if not location:
        return {}
    if location.startswith("python:"):
        return vars(importlib.import_module(location.removeprefix("python:")))
    # gunicorn executes a config file as the module "__config__" and leaves it in sys.modules
    module = sys.modules.get("__config__")
    return {} if module is None else vars(module)
