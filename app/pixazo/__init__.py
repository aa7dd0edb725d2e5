"""The Pixazo gateway: its client (every assumption about it) and the simulator."""
