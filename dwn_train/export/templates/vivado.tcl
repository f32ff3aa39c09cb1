# vivado.tcl: out-of-context synthesis and implementation of dwn_top.v with AMD Vivado, for the
# LUT, FF and timing figures of the LUT-network papers' tables (written by dwn-export fpga=xilinx;
# dwn-train cannot run Vivado itself).
#
#   vivado -mode batch -source vivado.tcl                      # xcvu9p-flgb2104-2-i, 2.0 ns clock
#   vivado -mode batch -source vivado.tcl -tclargs PART NS     # another part and clock period
#
# Reports land beside this script: vivado_utilization.txt (CLB LUTs, registers),
# vivado_timing.txt (worst negative slack WNS: Fmax = 1000 / (NS - WNS) MHz). Inputs and outputs
# are constrained to the clock with zero external delay, so a combinational design (pipeline=none)
# is timed from input to output within one period.

set part xcvu9p-flgb2104-2-i
set period 2.0
if {$argc > 0} { set part [lindex $argv 0] }
if {$argc > 1} { set period [lindex $argv 1] }
set here [file dirname [file normalize [info script]]]

read_verilog [file join $here dwn_top.v]
synth_design -top dwn_top -part $part -mode out_of_context
create_clock -name clk -period $period [get_ports clk]
set_input_delay 0 -clock clk [get_ports -filter {DIRECTION == IN && NAME != clk}]
set_output_delay 0 -clock clk [get_ports -filter {DIRECTION == OUT}]
opt_design
place_design
route_design
report_utilization -file [file join $here vivado_utilization.txt]
report_timing_summary -file [file join $here vivado_timing.txt]
