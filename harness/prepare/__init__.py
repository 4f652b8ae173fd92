"""Host-side builds: model sources, compressors (variants), converters (formats), data and samples, the
content cache, and the cached build steps that turn a recipe into deployable artifacts."""
