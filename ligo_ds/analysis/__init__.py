"""What runs cost and save, read from configs and run directories alone (nothing trains here).

report.py   `report`: the savings table, CSV files and plots
runs.py     run directories read as validation curves
savings.py  each run's saving against the scratch baseline, and each method's on its own schedules
budgets.py  the arithmetic of own-schedule savings and saving curves; summaries over seeds
render.py   the report's markdown, CSV and plots
plan.py     `plan`: per-rank memory, FLOPs and time per step, and what would fit
memory.py   the memory terms as closed forms in the shapes
"""
