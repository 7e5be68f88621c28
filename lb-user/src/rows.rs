//! Rows (`lb_common::ServiceBackend`): the index XDP's Maglev entries and
//! flows carry for a backend of a service, where it reads the backend's
//! address and counts its traffic. lb-user gives a backend a row when it
//! first enters the service's table and keeps it while the backend is
//! registered in the service's group (its flows stay when it drains);
//! then it frees the row, folding what the row carried into the service's
//! departed row, so that the service's totals never go down.
use aya::maps::PerCpuValues;
use foldhash::{HashMap, HashSet};
use lb_common::{FIRST_BACKEND_ROW, MAX_SERVICES, ServiceBackend, Traffic, addr};
use tracing::warn;

use crate::maps::{LbMaps, MapsError, possible_cpus};

/// The rows given out, per service, and the free ones.
pub struct Rows {
    /// Per service id: backend address (as the row names it) -> row.
    given: Vec<HashMap<[u8; 16], u32>>,
    /// Rows freed, given out again first.
    free: Vec<u32>,
    /// The lowest row never given out.
    next: u32,
    /// Rows of the maps (`lb_common::backend_rows` of `--max-backends`).
    capacity: u32,
    /// Whether running out was reported since the last row was freed.
    warned: bool,
}

impl Rows {
    /// Takes over the rows an earlier instance gave out to the services of
    /// `kept` (ids of services adopted whole); the rest are emptied, and so
    /// are the departed rows of the other services (fresh ones).
    pub fn adopt(maps: &mut LbMaps, kept: &[u32]) -> Result<Self, MapsError> {
        let named = maps.rows()?;
        let mut rows = Self {
            given: vec![HashMap::default(); MAX_SERVICES as usize],
            free: Vec::new(),
            next: FIRST_BACKEND_ROW,
            capacity: named.len() as u32,
            warned: false,
        };
        for service_id in (0..MAX_SERVICES).filter(|id| !kept.contains(id)) {
            clear_traffic(maps, service_id)?;
        }
        for (row, target) in (0u32..).zip(&named).skip(FIRST_BACKEND_ROW as usize) {
            if !target.is_backend() {
                continue;
            }
            if kept.contains(&target.service_id) {
                rows.given[target.service_id as usize].insert(target.addr16(), row);
            } else {
                maps.set_row(row, &ServiceBackend::default())?;
            }
        }
        rows.next = rows
            .given
            .iter()
            .flat_map(|service| service.values())
            .max()
            .map_or(FIRST_BACKEND_ROW, |&last| last + 1);
        let taken: HashSet<u32> = rows
            .given
            .iter()
            .flat_map(|s| s.values().copied())
            .collect();
        rows.free = (FIRST_BACKEND_ROW..rows.next)
            .rev()
            .filter(|row| !taken.contains(row))
            .collect();
        Ok(rows)
    }

    /// The row of backend `addr` (as a row names it) in service
    /// `service_id`, given out now (with zero traffic) if it has none;
    /// `None` when every row is taken.
    pub fn row(
        &mut self,
        maps: &mut LbMaps,
        service_id: u32,
        addr: [u8; 16],
    ) -> Result<Option<u32>, MapsError> {
        if let Some(&row) = self.given[service_id as usize].get(&addr) {
            return Ok(Some(row));
        }
        let row = match self.free.pop() {
            Some(row) => row,
            None if self.next < self.capacity => {
                self.next += 1;
                self.next - 1
            }
            None => {
                if !self.warned {
                    warn!(
                        backend = %addr::to_ip(addr), rows = self.capacity,
                        "every traffic row is taken: backends without one get no new flows; start with a larger --max-backends"
                    );
                    self.warned = true;
                }
                return Ok(None);
            }
        };
        clear_traffic(maps, row)?;
        maps.set_row(row, &ServiceBackend::naming(addr, service_id))?;
        self.given[service_id as usize].insert(addr, row);
        Ok(Some(row))
    }

    /// Frees the rows of service `service_id` whose backends are not in
    /// `registered` (the group's server list), adding what they carried
    /// to the service's departed row; returns their backends. XDP then
    /// checks every flow again, so none goes on using a freed row.
    pub fn release(
        &mut self,
        maps: &mut LbMaps,
        service_id: u32,
        registered: &HashSet<[u8; 16]>,
    ) -> Result<Vec<[u8; 16]>, MapsError> {
        let given = &mut self.given[service_id as usize];
        let gone: Vec<([u8; 16], u32)> = given
            .iter()
            .filter(|(addr, _)| !registered.contains(*addr))
            .map(|(&addr, &row)| (addr, row))
            .collect();
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let mut departed: Vec<Traffic> = maps.row_traffic(service_id)?.iter().copied().collect();
        for &(addr, row) in &gone {
            // A packet counted between this read and the row's reuse is lost.
            for (sum, carried) in departed.iter_mut().zip(maps.row_traffic(row)?.iter()) {
                *sum += *carried;
            }
            maps.set_row(row, &ServiceBackend::default())?;
            given.remove(&addr);
            self.free.push(row);
        }
        maps.set_row_traffic(service_id, to_per_cpu(departed)?)?;
        maps.recheck_flows();
        self.warned = false;
        Ok(gone.into_iter().map(|(addr, _)| addr).collect())
    }
}

/// Zeroes what `row` carried on every CPU.
fn clear_traffic(maps: &mut LbMaps, row: u32) -> Result<(), MapsError> {
    maps.set_row_traffic(row, to_per_cpu(vec![Traffic::default(); possible_cpus()?])?)
}

/// Per-CPU values to write, one per possible CPU.
fn to_per_cpu(values: Vec<Traffic>) -> Result<PerCpuValues<Traffic>, MapsError> {
    PerCpuValues::try_from(values).map_err(MapsError::Cpus)
}
