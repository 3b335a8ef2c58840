"""What comes in: uploads (files, folders, zips, with safety limits) and the one image decoder."""
