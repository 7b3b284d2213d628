"""OSC control of the daemon: the v1 address space (protocol), the UDP server, notifications."""
