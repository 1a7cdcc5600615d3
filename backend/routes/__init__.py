"""HTTP routers; ``backend.app`` mounts them."""
