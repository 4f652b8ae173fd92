"""Edge portability harness: compress, convert, push, run and collate models on edge devices.

`import harness` is cheap on purpose: TensorFlow, torch and the runtimes are
imported only by the steps that need them.
"""
__version__ = "0.1.0"
