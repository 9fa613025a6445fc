"""Guest-only tests: run inside the real-kernel lane's qemu guest (`make test-kernel`)."""
