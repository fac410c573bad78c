"""The blue-loop server (off-device): job intake, reasoners, result delivery. Built by a later issue."""
