"""Uploaded files stream to disk, and stop at their limit while they are read.

Django's default keeps small files in memory and checks no size; the API then read each file
whole before validation saw it (a 100 MB upload cost 1.15 GB before being refused). This
handler writes every file to a temporary file and counts as it goes: past WALLE_MAX_FILE_BYTES
for one file (WALLE_MAX_VERSION_BYTES for a .zip bundle, and for the whole request) the
upload stops with a 413 that says which limit.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from walle_web.rest import PayloadTooLarge

# Multipart framing and form fields next to the files.
OVERHEAD_BYTES = 1024 * 1024


class UploadTooLarge(PayloadTooLarge, RequestDataTooBig):
    """A 413 in DRF views; a Django 400 anywhere else (RequestDataTooBig)."""


class LimitedUploadHandler(TemporaryFileUploadHandler):
    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.received = 0
        limit = settings.WALLE_MAX_VERSION_BYTES + OVERHEAD_BYTES
        if content_length and content_length > limit:
            raise UploadTooLarge(
                f"the upload is {content_length} bytes; a version is at most "
                f"{settings.WALLE_MAX_VERSION_BYTES} bytes"
            )
        return super().handle_raw_input(input_data, META, content_length, boundary, encoding)

    def receive_data_chunk(self, raw_data, start):
        self.received = getattr(self, "received", 0) + len(raw_data)
        per_file = (
            settings.WALLE_MAX_VERSION_BYTES
            if self.field_name == "bundle"
            else settings.WALLE_MAX_FILE_BYTES
        )
        if start + len(raw_data) > per_file:
            raise UploadTooLarge(
                f"{self.file_name!r} is larger than {per_file} bytes, the limit per "
                f"{'bundle' if self.field_name == 'bundle' else 'file'}"
            )
        if self.received > settings.WALLE_MAX_VERSION_BYTES:
            raise UploadTooLarge(
                f"the files of this upload exceed {settings.WALLE_MAX_VERSION_BYTES} bytes, the limit per version"
            )
        return super().receive_data_chunk(raw_data, start)
