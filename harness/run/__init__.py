"""Running the matrix: cells and their steps, dispatchers (threads here, dask for a farm), transports to
devices, the device probe, measurement and pairing."""
