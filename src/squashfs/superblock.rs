//! The 96-byte superblock at offset 0. Absent tables (xattrs, export) are all ones.

pub(super) const SUPERBLOCK_LEN: usize = 96;
const MAGIC: u32 = 0x7371_7368; // "hsqs"
const ZSTD: u16 = 6;
pub(super) const ABSENT: u64 = u64::MAX;

pub(super) const FLAG_UNCOMPRESSED_INODES: u16 = 0x0001;
pub(super) const FLAG_UNCOMPRESSED_DATA: u16 = 0x0002;
pub(super) const FLAG_UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
pub(super) const FLAG_NO_FRAGMENTS: u16 = 0x0010;
pub(super) const FLAG_NO_XATTRS: u16 = 0x0200;
pub(super) const FLAG_UNCOMPRESSED_IDS: u16 = 0x0800;

pub(super) struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_log: u16,
    pub fragment_count: u32,
    pub flags: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
}

impl Superblock {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(SUPERBLOCK_LEN);
        o.extend_from_slice(&MAGIC.to_le_bytes()); // 0 magic
        o.extend_from_slice(&self.inode_count.to_le_bytes()); // 4 inode count
        o.extend_from_slice(&self.mkfs_time.to_le_bytes()); // 8 modification time
        o.extend_from_slice(&(1u32 << self.block_log).to_le_bytes()); // 12 block size
        o.extend_from_slice(&self.fragment_count.to_le_bytes()); // 16 fragment entry count
        o.extend_from_slice(&ZSTD.to_le_bytes()); // 20 compressor
        o.extend_from_slice(&self.block_log.to_le_bytes()); // 22 block log
        o.extend_from_slice(&self.flags.to_le_bytes()); // 24 flags
        o.extend_from_slice(&1u16.to_le_bytes()); // 26 id count
        o.extend_from_slice(&4u16.to_le_bytes()); // 28 version major
        o.extend_from_slice(&0u16.to_le_bytes()); // 30 version minor
        o.extend_from_slice(&self.root_inode.to_le_bytes()); // 32 root inode reference
        o.extend_from_slice(&self.bytes_used.to_le_bytes()); // 40 bytes used
        o.extend_from_slice(&self.id_table.to_le_bytes()); // 48 id table
        o.extend_from_slice(&ABSENT.to_le_bytes()); // 56 xattr id table
        o.extend_from_slice(&self.inode_table.to_le_bytes()); // 64 inode table
        o.extend_from_slice(&self.directory_table.to_le_bytes()); // 72 directory table
        o.extend_from_slice(&self.fragment_table.to_le_bytes()); // 80 fragment table
        o.extend_from_slice(&ABSENT.to_le_bytes()); // 88 export table
        o
    }
}
