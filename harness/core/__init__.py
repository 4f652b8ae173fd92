"""What every stage shares: the error tree, registries, progress lines, small file and number helpers."""
