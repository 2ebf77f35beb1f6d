"""Put a model to work: the DICOM node (``medseg dicom-listen``) and the HTTP service (``medseg serve``).

DICOM node: :mod:`~medseg.serve.dicom_node`, :mod:`~medseg.serve.spool`, :mod:`~medseg.serve.series_seg`,
:mod:`~medseg.serve.forwarder`.

HTTP service and browser viewer, around the one Predictor:

- :mod:`~medseg.serve.runner`: checks the settings, sets up request-id logging, starts uvicorn.
- :mod:`~medseg.serve.app`: the FastAPI application (routes, auth, request ids, metrics middleware).
- :mod:`~medseg.serve.pool`: the bounded queue and worker threads that run the model off the event loop.
- :mod:`~medseg.serve.security`: bearer token, content sniffing, header pixel counts, request ids.
- :mod:`~medseg.serve.uploads`: uploaded bytes -> RGB frames, exactly as ``medseg predict`` reads files.
- :mod:`~medseg.serve.answers` and :mod:`~medseg.serve.outputs`: masks -> PNG, overlay, probability PNG,
  JSON summary (COCO RLE, polygons), DICOM SEG.
- :mod:`~medseg.serve.model_info`, :mod:`~medseg.serve.metrics`, :mod:`~medseg.serve.settings`.
- ``static/index.html`` + ``static/viewer.js``: the viewer page (plain HTML + JavaScript, no build step).
"""
