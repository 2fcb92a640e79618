//! The protocol rules the guard enforces itself because h2 answers their breach with
//! another error code than RFC 9113 names: h2 refuses every frame it cannot load with
//! GOAWAY(PROTOCOL_ERROR), and every HPACK decoding error likewise. The guard sees the
//! frame first and ends the connection with the right code instead.

use super::WINDOW_UPDATE;
use super::{Event, Head, Trip, ACK, PING, PRIORITY, RST_STREAM, SETTINGS, SETTING_LEN};

/// SETTINGS_INITIAL_WINDOW_SIZE.
const INITIAL_WINDOW_SIZE: u16 = 0x4;
/// The largest flow-control window (RFC 9113 section 6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The HPACK table size hyper's server advertises: it sends no SETTINGS_HEADER_TABLE_SIZE,
/// so h2's decoder keeps the protocol default.
pub(super) const HEADER_TABLE_SIZE: u32 = 4096;

/// Whether `event` breaks a rule the guard enforces.
pub(super) fn check(event: Event) -> Result<(), Trip> {
    match event {
        Event::Head(head) => frame_size(head),
        // Section 6.5.2: a connection error of type FLOW_CONTROL_ERROR.
        Event::Setting(INITIAL_WINDOW_SIZE, value) if value > MAX_WINDOW => {
            Err(Trip::InitialWindowSize)
        }
        Event::Setting(..) => Ok(()),
        // RFC 7541 section 6.3 makes it a decoding error; RFC 9113 section 4.3 makes a
        // decoding error a connection error of type COMPRESSION_ERROR.
        Event::TableSizeUpdate(size) if size > HEADER_TABLE_SIZE => Err(Trip::TableSizeUpdate),
        Event::TableSizeUpdate(_) => Ok(()),
        // Only a fault in a trailer section, which the meter knows.
        Event::PseudoFieldFirst => Ok(()),
        // Section 3.4: a connection error of type PROTOCOL_ERROR.
        Event::BadPreface => Err(Trip::BadPreface),
    }
}

/// The fixed payload lengths of sections 6.3 to 6.9; a frame with another length is a
/// FRAME_SIZE_ERROR (a stream error for PRIORITY, which an endpoint may treat as a
/// connection error, section 5.4.1).
fn frame_size(head: Head) -> Result<(), Trip> {
    let fits = match head.kind {
        PRIORITY => head.len == 5,
        RST_STREAM | WINDOW_UPDATE => head.len == 4,
        PING => head.len == 8,
        SETTINGS if head.has(ACK) => head.len == 0,
        SETTINGS => head.len as usize % SETTING_LEN == 0,
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        Err(Trip::FrameSize)
    }
}
