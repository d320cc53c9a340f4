//! q's temporal types and their epochs, with conversions to and from chrono and std types.
