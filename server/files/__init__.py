"""Files domain: content-addressed storage of uploads, their metadata, reads and thumbnails.

* :mod:`.store` — :class:`~.store.FileStore`, the API other domains use;
* :mod:`.blobs` — the :class:`~.blobs.BlobStore` interface and the local-directory store;
* :mod:`.names` — file-name sanitising and the strict ``file://`` URI format;
* :mod:`.sniff` — what an upload really is, from its bytes;
* :mod:`.thumbnails` — PNG previews of images, cached by content.
"""
