"""Reading and writing Caffe's files: prototxt, IDX, LevelDB/LMDB, binary protos."""
