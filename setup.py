"""Only here for cffi: everything else is in setup.cfg."""

from setuptools import setup

setup(cffi_modules=["pausetls/core/_build_openssl.py:ffi"])
