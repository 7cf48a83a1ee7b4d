"""The OCI registry proxy (`/v2/...`, pull side): plain Django views, because the spec fixes the wire format.

`views` (thin) -> `tokens` (what a token authorises), `manifests` (what to serve for a tag or digest),
`blobs` (where a blob's bytes come from); `errors` maps every failure to the spec's error body once.
"""
