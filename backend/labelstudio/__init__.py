"""Everything about Label Studio: its API client and auth, image access policy and download cache,
the one labeling-config reader, the prediction format, task fields and webhook event names.

Anyone may import it (the service to answer Label Studio, the trainer to export and push).
"""
