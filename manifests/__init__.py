"""The manifest: the table of videos (`video_id, path, label, split` + optional `start, end`)."""
