"""Files our users bring and take away: MegaDetector batch JSON (more formats join here).

Anyone may import it. Readers and writers only: no HTTP, no Redis.
"""
