package serve

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog"
)

// Events binvault makes itself, as a primary makes them for its replicas
// (MariaDB's sql/sql_repl.cc): the rotate that names the binlog file being
// sent, the heartbeat of an idle link and the GTID list that tells a
// replica where the stream stands. Timestamps are 0, as the primary's, so
// a replica tells them from events of the binlog.
const (
	artificialFlag = 0x20 // LOG_EVENT_ARTIFICIAL_F
	crcLen         = 4
	// fdeCreatedOffset is the create_timestamp of a format description:
	// after the header, binlog version (2) and server version (50).
	fdeCreatedOffset = binlog.HeaderSize + 2 + 50
)

// event frames body with a v4 header and, with crc, a CRC32.
func event(typ replication.EventType, serverID uint32, logPos uint32, flags uint16, body []byte, crc bool) []byte {
	size := binlog.HeaderSize + len(body)
	if crc {
		size += crcLen
	}
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, 0) // timestamp
	b = append(b, byte(typ))
	b = binary.LittleEndian.AppendUint32(b, serverID)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = binary.LittleEndian.AppendUint32(b, logPos)
	b = binary.LittleEndian.AppendUint16(b, flags)
	b = append(b, body...)
	if crc {
		b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	}
	return b
}

// rotateEvent tells the replica the name of the binlog file the next
// events come from, and the position they start at.
func rotateEvent(serverID uint32, file string, pos uint64, crc bool) []byte {
	body := binary.LittleEndian.AppendUint64(nil, pos)
	body = append(body, file...)
	return event(replication.ROTATE_EVENT, serverID, 0, artificialFlag, body, crc)
}

// heartbeatEvent keeps an idle link alive. A MariaDB replica checks that
// it names the file it is in and a position at or after the one it has.
func heartbeatEvent(serverID uint32, file string, logPos uint32, crc bool) []byte {
	return event(replication.HEARTBEAT_EVENT, serverID, logPos, 0, []byte(file), crc)
}

// gtidListEvent carries a GTID position (one GTID per domain), as the
// primary sends after skipping the groups a replica already has, so the
// replica's position moves to where the stream stands.
func gtidListEvent(serverID uint32, gtids []binlog.MariaDBGTID, logPos uint32, crc bool) []byte {
	body := binary.LittleEndian.AppendUint32(nil, uint32(len(gtids))) // flags (top 4 bits): none
	for _, g := range gtids {
		body = binary.LittleEndian.AppendUint32(body, g.Domain)
		body = binary.LittleEndian.AppendUint32(body, g.Server)
		body = binary.LittleEndian.AppendUint64(body, g.Seq)
	}
	return event(replication.MARIADB_GTID_LIST_EVENT, serverID, logPos, artificialFlag, body, crc)
}

// replicaFDE returns a segment's format description as a primary sends it
// to a replica that reconnects: create_timestamp 0, so the replica does
// not take it for a primary that restarted and drop its temporary tables.
func replicaFDE(raw []byte, crc bool) []byte {
	fde := append([]byte(nil), raw...)
	if len(fde) < fdeCreatedOffset+4 {
		return fde
	}
	binary.LittleEndian.PutUint32(fde[fdeCreatedOffset:], 0)
	if crc && len(fde) >= binlog.HeaderSize+crcLen {
		n := len(fde) - crcLen
		binary.LittleEndian.PutUint32(fde[n:], crc32.ChecksumIEEE(fde[:n]))
	}
	return fde
}

// fdeChecksums reports whether a format description announces CRC32
// checksums for its file's events.
func fdeChecksums(ev binlog.Event) bool {
	fde, ok := ev.Parsed.(*replication.FormatDescriptionEvent)
	return ok && fde.ChecksumAlgorithm == replication.BINLOG_CHECKSUM_ALG_CRC32
}
