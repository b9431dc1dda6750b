"""Where the code runs: devices and meshes (sharding), process groups (distributed), JAX's compilation cache,
host/device memory checks, worker pools that die with their parent, Ctrl-C handling, test pause points."""
