"""HTTP routers; ``backend.service.app`` mounts them."""
