"""The IO shells: signaling link, RTC link, file transfer endpoints and the job runner."""
