"""The Statistics API: parameters (`params`), SQL (`store`), result bodies (`report`)."""
