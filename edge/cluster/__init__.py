"""Many inputs over a Ray cluster (`edge-run --ray`): the driver, in the edge-run process, and
the workers, Ray actors on the nodes. Both build on edge.run, which never imports them."""
