//! Recognising a QUIC client Initial from its long header (RFC 9000 §17.2.2, RFC 9369 for
//! version 2), without decrypting anything.

use super::PacketBytes;

pub const VERSION_1: u32 = 0x0000_0001;
pub const VERSION_2: u32 = 0x6b33_43cf;
/// Clients pad datagrams carrying Initial packets to at least 1200 bytes (RFC 9000 §14.1):
/// shorter long-header packets are not a client's first flight.
pub const MIN_CLIENT_INITIAL_LEN: usize = 1200;
const MAX_CONNECTION_ID_LEN: u8 = 20;

/// The QUIC version of a client Initial at `offset` (`len` bytes of UDP payload), if it is
/// one: header form and fixed bits set, a version we know, packet type Initial, sane
/// connection id length.
#[inline(always)]
pub fn client_initial_version<P: PacketBytes + ?Sized>(
    p: &P,
    offset: usize,
    len: usize,
) -> Option<u32> {
    if len < MIN_CLIENT_INITIAL_LEN {
        return None;
    }
    let header = p.read::<6>(offset)?;
    if header[0] & 0xc0 != 0xc0 {
        return None;
    }
    let version = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let packet_type = (header[0] >> 4) & 0x03;
    let initial = match version {
        VERSION_1 => packet_type == 0b00,
        VERSION_2 => packet_type == 0b01,
        _ => false,
    };
    (initial && header[5] <= MAX_CONNECTION_ID_LEN).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial(first: u8, version: u32, len: usize) -> std::vec::Vec<u8> {
        let mut datagram = std::vec![0u8; len];
        datagram[0] = first;
        datagram[1..5].copy_from_slice(&version.to_be_bytes());
        datagram[5] = 8;
        datagram
    }

    #[test]
    fn v1_and_v2_initials() {
        let v1 = initial(0xc3, VERSION_1, 1250);
        assert_eq!(
            client_initial_version(&v1[..], 0, v1.len()),
            Some(VERSION_1)
        );
        let v2 = initial(0xd3, VERSION_2, 1200);
        assert_eq!(
            client_initial_version(&v2[..], 0, v2.len()),
            Some(VERSION_2)
        );
    }

    #[test]
    fn other_packets_are_not_client_initials() {
        for (first, version, len) in [
            (0xe3, VERSION_1, 1250),   // v1 Handshake
            (0xc3, VERSION_2, 1250),   // v2 type 0 is 0-RTT
            (0xc3, 0xff00_001d, 1250), // draft-29
            (0x43, VERSION_1, 1250),   // short header
            (0xc3, VERSION_1, 1199),   // unpadded
        ] {
            let datagram = initial(first, version, len);
            assert_eq!(
                client_initial_version(&datagram[..], 0, len),
                None,
                "{first:#x} {version:#x} {len}"
            );
        }
        let mut long_cid = initial(0xc3, VERSION_1, 1250);
        long_cid[5] = 21;
        assert_eq!(client_initial_version(&long_cid[..], 0, 1250), None);
    }
}
