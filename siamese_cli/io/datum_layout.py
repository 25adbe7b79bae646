"""The byte layout of a raw uint8 Datum as protobuf writes it, shared by the writer and the reader.

Protobuf writes fields in number order, so a record is a header (channels, height, width, then the
data field's tag and length), the pixels, then the label: tag LABEL_TAG and one byte for labels
0..127. create-db writes records straight in this layout; the Data layer recognises a batch of them
with one comparison instead of parsing each.
"""

LABEL_TAG = 0x28  # Datum.label, field 5, varint


def varint(value):
    """A non-negative integer in protobuf's base-128 varint encoding."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def datum_header(channels, height, width):
    """The bytes a serialized Datum puts before its pixels: channels, height, width, then data's tag and length.

    Byte for byte what caffe_pb2.Datum(...).SerializeToString() gives, without a message object per record.
    """
    return (b"\x08" + varint(channels) + b"\x10" + varint(height) + b"\x18" + varint(width)
            + b"\x22" + varint(channels * height * width))
