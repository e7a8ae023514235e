"""Files domain: what an uploaded file is (type sniffing) and which kind of limits apply to it."""
