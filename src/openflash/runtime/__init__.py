"""The process-wide runtime: endpoints to pools, preparation on demand, nested calls."""
