"""webdancer: train autonomous web information-seeking agents (WebDancer) on existing trainers."""

from webdancer.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
