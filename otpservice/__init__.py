"""otpservice: voice one-time-password verification over TEL4VN Autocall."""

__version__ = "0.1.0"
