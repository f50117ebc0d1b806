//! `--chmod`: octal (`0755`) or symbolic (`u+x,go-w`, `a=rX`) as chmod(1) writes them, applied
//! to every copied file and directory (BuildKit applies it to directories too).

use cairn_dockerfile::Chmod;

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeChange {
    /// Replace the permission bits (including setuid/setgid/sticky) with these.
    Set(u32),
    /// Symbolic clauses, applied in order.
    Symbolic(Vec<Clause>),
}

/// One clause of a symbolic mode: `who op perms` (`ug+rw`), possibly with several ops (`u+r-w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who: u32,
    ops: Vec<(char, Perm)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perm {
    /// Bits from `rwxst`, plus whether `X` was given.
    Bits {
        rwx: u32,
        x_cond: bool,
        s: bool,
        t: bool,
    },
    /// Copy of another class's current bits (`g=u`).
    Copy(char),
}

const U: u32 = 0o4700;
const G: u32 = 0o2070;
const O: u32 = 0o1007;

impl ModeChange {
    /// Parses the `--chmod` of a COPY/ADD; `Err` carries a reason for the message.
    pub fn parse(c: &Chmod) -> Result<ModeChange, String> {
        match c {
            Chmod::Octal(m) => {
                if *m > 0o7777 {
                    return Err(format!("invalid mode {m:o}"));
                }
                Ok(ModeChange::Set(*m))
            }
            Chmod::Symbolic(s) => parse_symbolic(s).map(ModeChange::Symbolic),
        }
    }

    /// The new permission bits (low 12 bits) of an entry whose current mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            ModeChange::Set(m) => *m & 0o7777,
            ModeChange::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    for (op, perm) in &c.ops {
                        let bits = match perm {
                            Perm::Bits { rwx, x_cond, s, t } => {
                                // `X`: execute only for directories or files some class can
                                // already execute, judged on the mode before this operation.
                                let mut rwx = *rwx;
                                if *x_cond && (is_dir || m & 0o111 != 0) {
                                    rwx |= 0o1;
                                }
                                let spread = rwx * 0o111;
                                let mut b = spread & c.who & 0o777;
                                if *s {
                                    b |= c.who & 0o6000;
                                }
                                if *t {
                                    b |= c.who & 0o1000;
                                }
                                b
                            }
                            Perm::Copy(from) => {
                                let v = match from {
                                    'u' => (m >> 6) & 7,
                                    'g' => (m >> 3) & 7,
                                    _ => m & 7,
                                };
                                (v * 0o111) & c.who & 0o777
                            }
                        };
                        m = match op {
                            '+' => m | bits,
                            '-' => m & !bits,
                            _ => (m & !(c.who & 0o777) & !(c.who & 0o7000)) | bits,
                        };
                    }
                }
                m
            }
        }
    }
}

fn parse_symbolic(s: &str) -> Result<Vec<Clause>, String> {
    let bad = || format!("invalid symbolic mode {s:?}");
    let mut out = Vec::new();
    for part in s.split(',') {
        let chars: Vec<char> = part.chars().collect();
        let mut i = 0;
        let mut who = 0;
        while i < chars.len() && "ugoa".contains(chars[i]) {
            who |= match chars[i] {
                'u' => U,
                'g' => G,
                'o' => O,
                _ => U | G | O,
            };
            i += 1;
        }
        if who == 0 {
            // chmod(1) would mask with the umask here; an image must not depend on the
            // builder's umask, so an empty class means "all", as BuildKit does.
            who = U | G | O;
        }
        let mut ops = Vec::new();
        while i < chars.len() {
            let op = chars[i];
            if !"+-=".contains(op) {
                return Err(bad());
            }
            i += 1;
            if i < chars.len() && "ugo".contains(chars[i]) {
                ops.push((op, Perm::Copy(chars[i])));
                i += 1;
                continue;
            }
            let (mut rwx, mut x_cond, mut st_s, mut st_t) = (0, false, false, false);
            while i < chars.len() && "rwxXst".contains(chars[i]) {
                match chars[i] {
                    'r' => rwx |= 4,
                    'w' => rwx |= 2,
                    'x' => rwx |= 1,
                    'X' => x_cond = true,
                    's' => st_s = true,
                    _ => st_t = true,
                }
                i += 1;
            }
            ops.push((
                op,
                Perm::Bits {
                    rwx,
                    x_cond,
                    s: st_s,
                    t: st_t,
                },
            ));
        }
        if ops.is_empty() {
            return Err(bad());
        }
        out.push(Clause { who, ops });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        ModeChange::parse(&Chmod::Symbolic(s.into()))
            .unwrap()
            .apply(mode, dir)
    }

    #[test]
    fn symbolic_table() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=r", 0o777, false), 0o444);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o000, false), 0o750);
        assert_eq!(sym("a+X", 0o644, false), 0o644);
        assert_eq!(sym("a+X", 0o644, true), 0o755);
        assert_eq!(sym("a+X", 0o744, false), 0o755);
        assert_eq!(sym("g=u", 0o740, false), 0o770);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("+t", 0o755, true), 0o1755);
        assert_eq!(sym("u+r-w", 0o200, false), 0o400);
        assert_eq!(sym("o=", 0o1777, true), 0o770);
    }

    #[test]
    fn octal_and_errors() {
        assert_eq!(
            ModeChange::parse(&Chmod::Octal(0o755))
                .unwrap()
                .apply(0o600, false),
            0o755
        );
        assert!(ModeChange::parse(&Chmod::Octal(0o77777)).is_err());
        for bad in ["u+q", "z+x", "u", "", "u+x,"] {
            assert!(
                ModeChange::parse(&Chmod::Symbolic(bad.into())).is_err(),
                "{bad}"
            );
        }
    }
}
