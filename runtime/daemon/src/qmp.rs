//! A small QMP client: the handshake, commands, and the events the daemon
//! supervises the guest by (power-off, reset, panic).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

/// What QEMU told us about the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpEvent {
    /// `SHUTDOWN`, with QEMU's reason (`guest-shutdown`, `guest-reset`, …).
    Shutdown { reason: String },
    /// `GUEST_PANICKED` (a pvpanic device).
    Panicked,
    /// The connection closed: QEMU is exiting.
    Closed,
}

impl QmpEvent {
    fn from_message(message: &Value) -> Option<QmpEvent> {
        match message.get("event")?.as_str()? {
            "SHUTDOWN" => Some(QmpEvent::Shutdown {
                reason: message["data"]["reason"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string(),
            }),
            "GUEST_PANICKED" => Some(QmpEvent::Panicked),
            _ => None,
        }
    }
}

pub struct Qmp {
    writer: Mutex<Box<dyn Write + Send>>,
    replies: Mutex<Receiver<Value>>,
}

impl Qmp {
    /// Reads the greeting, enters command mode, and from then on forwards
    /// events to `events` (through `wrap`) from a reader thread.
    pub fn handshake<E: Send + 'static>(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        events: Sender<E>,
        wrap: fn(QmpEvent) -> E,
        timeout: Duration,
    ) -> io::Result<Qmp> {
        let (reply_tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Ok(message) = serde_json::from_str::<Value>(&line) {
                    if let Some(event) = QmpEvent::from_message(&message) {
                        let _ = events.send(wrap(event));
                    } else if message.get("return").is_some()
                        || message.get("error").is_some()
                        || message.get("QMP").is_some()
                    {
                        let _ = reply_tx.send(message);
                    }
                }
                line.clear();
            }
            let _ = events.send(wrap(QmpEvent::Closed));
        });
        let qmp = Qmp {
            writer: Mutex::new(writer),
            replies: Mutex::new(replies),
        };
        let greeting = qmp.reply(timeout)?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::other(format!("not a QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", timeout)?;
        Ok(qmp)
    }

    fn reply(&self, timeout: Duration) -> io::Result<Value> {
        let replies = self
            .replies
            .lock()
            .map_err(|_| io::Error::other("QMP lock"))?;
        replies
            .recv_timeout(timeout)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "QEMU did not answer on QMP"))
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&self, command: &str, timeout: Duration) -> io::Result<Value> {
        {
            let mut writer = self
                .writer
                .lock()
                .map_err(|_| io::Error::other("QMP lock"))?;
            writeln!(writer, "{}", json!({ "execute": command }))?;
            writer.flush()?;
        }
        let reply = self.reply(timeout)?;
        match reply.get("error") {
            Some(error) => Err(io::Error::other(format!(
                "QMP {command}: {}",
                error["desc"].as_str().unwrap_or("failed")
            ))),
            None => Ok(reply["return"].clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestSink;
    use std::io::Cursor;

    #[test]
    fn handshake_commands_and_events() {
        let script = concat!(
            r#"{"QMP": {"version": {}, "capabilities": []}}"#,
            "\n",
            r#"{"return": {}}"#,
            "\n",
            r#"{"timestamp": {}, "event": "POWERDOWN"}"#,
            "\n",
            r#"{"return": {}}"#,
            "\n",
            r#"{"timestamp": {}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
            "\n",
        );
        let sink = TestSink::default();
        let (tx, rx) = mpsc::channel();
        let qmp = Qmp::handshake(
            Box::new(Cursor::new(script)),
            Box::new(sink.clone()),
            tx,
            |e| e,
            Duration::from_secs(5),
        )
        .unwrap();
        qmp.execute("system_powerdown", Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            QmpEvent::Shutdown {
                reason: "guest-shutdown".into()
            }
        );
        assert_eq!(rx.recv().unwrap(), QmpEvent::Closed);
        let sent = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            sent,
            "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"system_powerdown\"}\n"
        );
    }

    #[test]
    fn errors_and_silence_are_reported() {
        let script = concat!(
            r#"{"QMP": {}}"#,
            "\n",
            r#"{"error": {"class": "GenericError", "desc": "no capabilities"}}"#,
            "\n",
        );
        let (tx, _rx) = mpsc::channel();
        let err = Qmp::handshake(
            Box::new(Cursor::new(script)),
            Box::new(TestSink::default()),
            tx,
            |e| e,
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no capabilities"), "{err}");

        let (tx, _rx) = mpsc::channel();
        let err = Qmp::handshake(
            Box::new(Cursor::new("")),
            Box::new(TestSink::default()),
            tx,
            |e| e,
            Duration::from_millis(200),
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
