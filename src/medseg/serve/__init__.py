"""Put a model to work: the DICOM node (``medseg dicom-listen``) and the HTTP service."""
