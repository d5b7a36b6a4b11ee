"""An in-memory emulator of the TEL4VN Autocall API for development and tests.

Never mount it in production mode: it hands out tokens to a published example key and exposes
unauthenticated ``/_sandbox/`` admin endpoints that reveal every OTP it "speaks".
"""
