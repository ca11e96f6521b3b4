"""Running user code: the wire protocol, the worker's main, and the pool that supervises workers."""
